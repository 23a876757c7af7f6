"""What the API answers, as pydantic models: they validate the answers and document them in /openapi.json."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class PredictionOut(BaseModel):
    """One image segmented with no prompt."""

    filename: str = Field(description="the uploaded file's name, as the client sent it (without folders)")
    width: int = Field(description="image width in pixels (after EXIF orientation)")
    height: int = Field(description="image height in pixels")
    box: list[float] | None = Field(
        description="x0, y0, x1, y1 in image pixels: the box the first pass's mask gave the final pass; "
        "null when the first pass found nothing"
    )
    score: float = Field(description="the decoder's predicted IoU of the final mask")
    foreground: float = Field(description="fraction of the image inside the final mask")
    fallback: bool = Field(description="true when the first pass found nothing, so no box was derived")
    passes: int = Field(description="decoder passes run: the no-prompt pass and the self-prompted ones")
    milliseconds: float = Field(description="time to decode, segment and encode this image")
    queue_milliseconds: float = Field(description="time this request waited for the model")
    mask_png: str = Field(description="the final mask: base64 PNG, 8-bit grayscale, 255 inside, image size")
    pass0_mask_png: str = Field(description="the first (no-prompt) pass's mask, same format")
    overlay_jpeg: str | None = Field(
        default=None, description="with overlays=true: base64 JPEG of the image, final mask in green, box in yellow"
    )
    pass0_overlay_jpeg: str | None = Field(
        default=None, description="with overlays=true: the same picture with the first pass's mask"
    )


class LimitsOut(BaseModel):
    """What the server accepts."""

    max_upload_bytes: int = Field(description="largest request body (one image, or all images of a zip request)")
    max_pixels: int = Field(description="largest image, width x height")
    max_files: int = Field(description="most images in one zip request")
    formats: list[str] = Field(description="image formats accepted")


class InfoOut(BaseModel):
    """The served model's card and the server's settings."""

    name: str
    backbone: str
    input_size: int | None = Field(description="pixels of the square model input")
    strategy: str = Field(description="how the image encoder was trained: lora, frozen or full")
    format: str = Field(description="trainable: trained tensors only; full: every weight (a merged export)")
    iterations: int = Field(description="self-prompting passes after the no-prompt pass")
    data: str | None = Field(description="what it was trained on (dataset, folder or CSV name)")
    train_ids: str | None
    train_images: int | None
    val_images: int | None
    val_dice: float | None = Field(description="prompt-free validation Dice of this checkpoint")
    epoch: int | None
    samsp_version: str | None
    settings: dict[str, Any] = Field(description="the model's saved settings (ModelConfig)")
    card: list[list[str]] = Field(description="the card as [label, value] rows, as the page shows it")
    engine: dict[str, Any] = Field(description="how predictions run here (precision, flips, ...)")
    limits: LimitsOut


class HealthOut(BaseModel):
    """The server is up; `queued` requests are waiting for or using the model."""

    status: Literal["ok"]
    queued: int


class ErrorOut(BaseModel):
    """Why a request was refused, in one line."""

    detail: str
