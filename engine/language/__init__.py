"""The language-model side of Prompt4RE: region descriptions, task prompts, semantic vectors.

- `describe.describe_regions(dataset)`: one factual text per region (never a target value);
- `templates.task_template(target, description, has_image)`: the task prompt;
- `models.load_language_model(name)`: SmolLM2 (default), MiniLM, or any Hugging Face model;
- `encode.encode_regions(dataset, target, model=...)`: (N, hidden) vectors, cached on disk;
- `images.crop_region_images(dataset, raster)`: one image per region for multimodal models.

Submodules are imported on use: importing this package loads no model library.
"""
