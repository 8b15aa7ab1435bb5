"""Caption CSVs, WebDataset shards, batch plans and caption tokenisation."""

import numpy as np
import pytest

from rs_vlm_app.errors import UserError
from rs_vlm_app.training.data import (
    TarMember,
    check_caption_source,
    expand_shards,
    open_caption_data,
    read_caption_csv,
    read_image,
    read_label_csv,
    split_key,
)
from rs_vlm_app.training.loader import BatchPlan
from tests.training import synthetic


def write_png(path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)
    return path


def test_csv_paths_are_resolved_against_the_csv_folder(tmp_path):
    write_png(tmp_path / "imgs" / "a.png")
    absolute = write_png(tmp_path / "elsewhere" / "b.png")
    csv_path = tmp_path / "train.csv"
    csv_path.write_text(f'filepath,caption\nimgs/a.png,"a red field, with a road"\n{absolute},a lake\n')
    table = read_caption_csv(csv_path)
    assert table.images == [str(tmp_path / "imgs" / "a.png"), str(absolute)]
    assert table.captions == ["a red field, with a road", "a lake"]
    assert read_image(table.images[0]).size == (8, 8)


def test_tab_separated_csv_as_open_clip_writes_it(tmp_path):
    write_png(tmp_path / "a.png")
    path = tmp_path / "train.tsv"
    path.write_text("title\tfilepath\nsome, commas\ta.png\n")
    table = read_caption_csv(path, caption_key="title")
    assert table.captions == ["some, commas"]


def test_missing_column_is_one_clear_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("path,text\na.png,x\n")
    with pytest.raises(UserError) as error:
        read_caption_csv(path)
    assert str(error.value) == (f"{path}: no 'filepath' column (header: path, text); the CSV needs a header with "
                                "filepath and caption")
    with pytest.raises(UserError, match="no 'filepath' column"):
        check_caption_source(str(path))


def test_missing_files_are_counted_and_the_first_is_named(tmp_path):
    write_png(tmp_path / "ok.png")
    path = tmp_path / "train.csv"
    path.write_text("filepath,caption\nok.png,fine\ngone1.png,x\nok.png,again\ngone2.png,y\n")
    with pytest.raises(UserError, match=r"2 of 4 image files are missing, first on line 3: gone1.png"):
        read_caption_csv(path)


def test_rows_without_caption_are_skipped_with_a_warning(tmp_path, caplog):
    write_png(tmp_path / "ok.png")
    path = tmp_path / "train.csv"
    path.write_text("filepath,caption\nok.png,fine\nok.png,\n")
    table = read_caption_csv(path)
    assert len(table) == 1
    assert "1 rows without a caption were skipped" in caplog.text


def test_missing_or_empty_csv(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_caption_csv(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("filepath,caption\n")
    with pytest.raises(UserError, match="no data rows"):
        read_caption_csv(tmp_path / "empty.csv")


def test_label_csv(tmp_path):
    path = synthetic.write_label_csv(tmp_path, 9)
    images, labels = read_label_csv(path)
    assert len(images) == 9 and labels[0] == "red_circle" and labels[8] == "red_circle"


def test_shards_are_indexed_without_extraction(tmp_path):
    shards = synthetic.write_shards(tmp_path / "shards", 10, per_shard=4)
    assert [p.name for p in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    table = open_caption_data(str(tmp_path / "shards"))
    assert len(table) == 10
    assert isinstance(table.images[0], TarMember)
    assert table.captions[:1] == [next(synthetic.samples(1))[1]]
    reference = next(synthetic.samples(1))[2]
    np.testing.assert_array_equal(np.asarray(read_image(table.images[0])), reference)
    braces = open_caption_data(str(tmp_path / "shards" / "shard-{000000..000001}.tar"))
    assert len(braces) == 8
    assert len(open_caption_data(str(tmp_path / "shards" / "*.tar"))) == 10


def test_shard_samples_without_caption_are_skipped(tmp_path, caplog):
    import io
    import tarfile

    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in (("a.jpg", b"x"), ("a.txt", b"cap"), ("b.png", b"y"), ("c.txt", b"only text")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    table = open_caption_data(str(path))
    assert table.captions == ["cap"]
    assert "2 samples without an image or a .txt caption were skipped" in caplog.text
    with pytest.raises(UserError, match="cannot read the image"):
        read_image(table.images[0])


def test_shard_errors(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        expand_shards(str(tmp_path / "missing.tar"))
    with pytest.raises(UserError, match="no shard matches"):
        expand_shards(str(tmp_path / "*.tar"))
    (tmp_path / "bad.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(UserError, match="not a readable tar shard"):
        open_caption_data(str(tmp_path / "bad.tar"))


def test_webdataset_keys():
    assert split_key("dir/a1.seg.png") == ("dir/a1", "seg.png")
    assert split_key("x.TXT") == ("x", "txt")


def test_two_processes_see_the_batches_of_one_process_with_twice_the_batch():
    one = BatchPlan(n_samples=50, batch_size=8, world_size=1, rank=0, seed=3)
    two = [BatchPlan(n_samples=50, batch_size=4, world_size=2, rank=r, seed=3) for r in range(2)]
    assert one.steps_per_epoch == two[0].steps_per_epoch == 6  # 50 // 8, the tail is dropped
    single = list(one.micro_batches(epoch=1))
    split = [list(p.micro_batches(epoch=1)) for p in two]
    for step, batch in enumerate(single):
        assert batch == split[0][step] + split[1][step]


def test_accumulation_and_resume_cover_the_same_samples():
    plain = list(BatchPlan(64, 8, seed=1).micro_batches(0))
    accumulated = list(BatchPlan(64, 4, grad_accum=2, seed=1).micro_batches(0))
    assert [a + b for a, b in zip(accumulated[::2], accumulated[1::2], strict=True)] == plain
    resumed = list(BatchPlan(64, 8, seed=1).micro_batches(0, start_step=5))
    assert resumed == plain[5:]


def test_each_epoch_has_its_own_order():
    plan = BatchPlan(32, 8, seed=0)
    assert plan.order(0).tolist() != plan.order(1).tolist()
    assert sorted(plan.order(1).tolist()) == list(range(32))
    assert plan.order(1).tolist() == BatchPlan(32, 8, seed=0).order(1).tolist()


def test_truncated_captions_are_counted():
    import open_clip

    from rs_vlm_app.training.loader import tokenize_counting

    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=8)
    texts = ["a lake", "one two three four five six", "one two three four five six seven eight nine"]
    tokens, truncated = tokenize_counting(tokenizer, texts, 8)
    # "a lake" -> sot a lake eot (4); six words -> 8 exactly (fits); nine words -> 11 (cut)
    assert truncated == 1
    assert tokens.shape == (3, 8)
    assert tokens[2, -1] == tokenizer.eot_token_id
