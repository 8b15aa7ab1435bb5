"""Models: from "the model the user named" to a ready encoder.

catalogue   resources/models.toml as typed entries (ModelEntry, load_catalogue, get_entry, default_entry)
resolve     weights file of an entry: rs-vlm cache, Hugging Face cache, download only when allowed
loading     safe reading (safetensors / weights_only) and exact loading of state_dicts
spec        ModelSpec: the one description of which model, and where it computes (every layer passes it)
factory     ModelSpec -> LoadedModel (load_model; a new model every call; image tower loaded
            when first needed)
open_clip_import  import_open_clip: open_clip without transformers, timm, huggingface_hub and
            torch._dynamo until a model needs them
cache       ModelCache: the one cache of loaded models, and the encoders/captioners built on them
tile_encoder  TileEncoder / TileCaptioner: the protocols tasks type their models against
device      pick_device, resolve_precision, autocast, default_batch_size
encoder     ClipEncoder: batched, normalised image and text embeddings
preprocess  fast_tile_transform and the reference SeLo tile transform

Nothing here is imported by the package itself: import the module you need (torch loads lazily).
"""
