"""The `realblur` dataset (folder-style builder: `realblur_dataset_builder`)."""
