"""Model side: the encoder, the losses, merging. Consumes the Parquet shards the pipeline writes."""
