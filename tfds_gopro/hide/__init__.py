"""The `hide` dataset builder (folder-style: `hide_dataset_builder.Builder`)."""
