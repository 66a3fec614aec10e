"""What differs between backbone families: image preprocessing, image placeholder ids, position ids.

Everything else (the decoder, the KV cache, the pose head) is shared. A family object answers:
- ``encode_image(image) -> ImageInput``: the processed pixels of ONE image and how many placeholder
  tokens it takes in the sequence;
- ``placeholder_ids(image_input)``: the ids that stand for that image in the sequence;
- ``positions(ids, images) -> (P, L)``: position ids of a whole unpadded sequence (P = 1 for ordinary
  RoPE, 3 for Qwen2-VL's multimodal RoPE). Positions of a prefix never depend on what follows it, which is
  what lets a session's KV cache be reused;
- ``image_kwargs(images)``: the forward keyword arguments for the images whose placeholders are in the
  chunk being run, in sequence order.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

FAMILIES = ("llava", "qwen2_vl", "qwen2_5_vl", "text")


@dataclass
class ImageInput:
    """One preprocessed image: ``pixel_values`` as the family's processor returns them for this image alone,
    ``grid_thw`` (3,) for Qwen2-VL (else None), ``num_tokens`` placeholder tokens it occupies."""

    pixel_values: torch.Tensor
    num_tokens: int
    grid_thw: torch.Tensor | None = None


class TextFamily:
    name = "text"
    accepts_images = False
    # The side, in pixels, an image is scaled down to before the vision tower sees it (its shortest edge at
    # least this), or None when the family keeps a resolution of its own choosing. The server decodes JPEGs
    # only that large (Pillow's DCT-domain draft mode), several times faster than a full decode.
    input_side: int | None = None

    def __init__(self, config, image_processor=None):
        self.config = config
        self.image_processor = image_processor

    def encode_image(self, image) -> ImageInput:
        raise ValueError("this backbone does not read images")

    def placeholder_ids(self, image: ImageInput) -> list[int]:
        raise ValueError("this backbone does not read images")

    def positions(self, ids: list[int], images: list[ImageInput]) -> torch.Tensor:
        return torch.arange(len(ids)).view(1, -1)

    def image_kwargs(self, images: list[ImageInput], device, dtype) -> dict:
        return {}

    @property
    def max_positions(self) -> int:
        return int(getattr(self.text_config, "max_position_embeddings", 1 << 30))

    @property
    def text_config(self):
        return self.config.get_text_config() if hasattr(self.config, "get_text_config") else self.config


class LlavaFamily(TextFamily):
    """LLaVA-1.5 layout: each image is ``image_seq_length`` copies of ``image_token_id`` (the CLIP patch grid,
    CLS dropped under the "default" feature strategy)."""

    name = "llava"
    accepts_images = True

    def __init__(self, config, image_processor):
        super().__init__(config, image_processor)
        vision = config.vision_config
        patches = (vision.image_size // vision.patch_size) ** 2
        self.tokens_per_image = patches + (1 if config.vision_feature_select_strategy == "full" else 0)
        self.image_token_id = config.image_token_id
        self.input_side = int(vision.image_size)     # CLIP: shortest edge resized to this, then centre-cropped

    def encode_image(self, image) -> ImageInput:
        pixels = self.image_processor(images=[image.convert("RGB")], return_tensors="pt")["pixel_values"]
        return ImageInput(pixel_values=pixels, num_tokens=self.tokens_per_image)

    def placeholder_ids(self, image: ImageInput) -> list[int]:
        return [self.image_token_id] * image.num_tokens

    def image_kwargs(self, images, device, dtype) -> dict:
        if not images:
            return {}
        return {"pixel_values": torch.cat([im.pixel_values for im in images]).to(device, dtype)}


class Qwen2VLFamily(TextFamily):
    """Qwen2-VL and Qwen2.5-VL: an image is ``<|vision_start|>`` + (t·h·w / merge²) ``<|image_pad|>`` +
    ``<|vision_end|>``; positions are 3-D (temporal, height, width) from the model's own ``get_rope_index``."""

    name = "qwen2_vl"
    accepts_images = True

    def __init__(self, config, image_processor, rope_index=None):
        super().__init__(config, image_processor)
        self.merge = config.vision_config.spatial_merge_size
        self.image_token_id = config.image_token_id
        self.start_id = config.vision_start_token_id
        self.end_id = config.vision_end_token_id
        self.rope_index = rope_index  # the backbone's get_rope_index, bound at load time

    def encode_image(self, image) -> ImageInput:
        out = self.image_processor(images=[image.convert("RGB")], return_tensors="pt")
        grid = out["image_grid_thw"][0]
        return ImageInput(pixel_values=out["pixel_values"], grid_thw=grid,
                          num_tokens=int(grid.prod()) // self.merge ** 2)

    def placeholder_ids(self, image: ImageInput) -> list[int]:
        return [self.start_id] + [self.image_token_id] * image.num_tokens + [self.end_id]

    def positions(self, ids: list[int], images: list[ImageInput]) -> torch.Tensor:
        if not images:
            return torch.arange(len(ids)).view(1, -1).expand(3, -1)
        input_ids = torch.tensor([ids])
        grids = torch.stack([im.grid_thw for im in images])
        types = (input_ids == self.image_token_id).int()
        pos, _ = self.rope_index(input_ids, mm_token_type_ids=types, image_grid_thw=grids)
        return pos[:, 0]

    def image_kwargs(self, images, device, dtype) -> dict:
        if not images:
            return {}
        return {"pixel_values": torch.cat([im.pixel_values for im in images]).to(device, dtype),
                "image_grid_thw": torch.stack([im.grid_thw for im in images]).to(device)}


def make_family(name: str, config, image_processor, inner_model=None):
    """The family helper for a loaded backbone (``inner_model`` = the backbone's ``.model``, for Qwen's rope)."""
    if name == "llava":
        return LlavaFamily(config, image_processor)
    if name in ("qwen2_vl", "qwen2_5_vl"):  # same placeholders and rope_index signature
        return Qwen2VLFamily(config, image_processor, rope_index=inner_model.get_rope_index)
    if name == "text":
        return TextFamily(config, image_processor)
    raise ValueError(f"unknown backbone family {name!r}; expected one of {FAMILIES}")
