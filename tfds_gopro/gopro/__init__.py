"""The `gopro` dataset (folder-style builder: `gopro_dataset_builder`)."""
