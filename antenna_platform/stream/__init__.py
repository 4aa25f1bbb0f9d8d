"""The speed layer: Kafka -> Parquet lake + 5-minute totals in `bytes`, exactly once."""
