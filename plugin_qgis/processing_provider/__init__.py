"""rs-vlm's Processing provider: algorithms that run jobs in the rs-vlm worker."""
