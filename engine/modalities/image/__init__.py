"""Images: folders, zip files or CSVs of photos, timm backbones, pixels through the evaluation transform.

The image code itself lives where each layer keeps it (engine.data.scan, engine.models.catalog,
engine.training.image_inputs, engine.outputs.export and .predict); this object is the one place that
says "for images, use these". Every import is lazy, so asking for the modality costs nothing.
"""
from __future__ import annotations

from engine.core.modality import THUMBNAIL_VIEW, Modality


class ImageModality(Modality):
    name = "image"
    noun = "image"
    nouns = "images"
    model_noun = "image backbone"

    def reads(self, source) -> bool:
        return bool(source)          # images are what a folder of anything else is scanned as

    def scan(self, source, *, seed: int = 0, backbone: str | None = None, progress=None, control=None,
             **options):
        from engine.data.scan import scan_dataset
        return scan_dataset(source, seed=seed, progress=progress, control=control)

    def owns_backbone(self, name: str | None) -> bool:
        from engine.models.catalog import CATALOG
        return any(name in (spec.name, spec.arch) for spec in CATALOG)

    def backbone_rows(self) -> list[dict]:
        from engine.models.catalog import list_backbones
        return [{**row, "modality": self.name} for row in list_backbones()]

    @property
    def default_backbone(self) -> str:
        from engine.models.catalog import DEFAULT_BACKBONE
        return DEFAULT_BACKBONE

    def check_backbone(self, name: str) -> None:
        from engine.models.catalog import get_spec
        get_spec(name)

    def checkpoint_meta(self, bundle, model) -> dict:
        from engine.models.heads import head_kind
        return {"backbone": bundle.spec.name, "arch": bundle.spec.arch,
                "preprocessing": bundle.preprocessing.to_dict(), "head": head_kind(model)}

    def build_from_meta(self, meta: dict, head: str):
        from engine.models.catalog import build_architecture, get_spec
        return build_architecture(get_spec(meta["backbone"]).name, len(meta["classes"]), head)

    def training_inputs(self):
        from engine.training.image_inputs import ImageInputs
        return ImageInputs()

    def recipe_search(self):
        from engine.search.auto import RecipeSearch
        return RecipeSearch

    def eval_inputs(self, model, checkpoint, samples, batch_size: int):
        import torch
        from torch.utils.data import DataLoader

        from engine.data.transforms import ImageDataset, eval_transform
        from engine.models.predictor import predictor
        net = predictor(model.to(memory_format=torch.channels_last), checkpoint.meta)
        dataset = ImageDataset([s.path for s in samples], [s.label for s in samples],
                               eval_transform(checkpoint.preprocessing))
        return net, DataLoader(dataset, batch_size=batch_size)

    def export(self, run_dir, out, *, verify=None, tolerance: float = 1e-3, exporter: str = "auto",
               dynamic_size: bool = False, progress=None, control=None):
        from engine.outputs.export import export_run
        return export_run(run_dir, out, verify_images=verify, tolerance=tolerance, exporter=exporter,
                          dynamic_size=dynamic_size, progress=progress, control=control)

    def row_input(self, row: dict):
        from engine.data.images import ImageError, load_image
        try:
            return load_image(row["path"])
        except (ImageError, KeyError):
            return None

    def classifier(self, path, kind: str, device: str = "cpu"):
        from engine.outputs.predict import OnnxClassifier, TorchClassifier
        return OnnxClassifier(path) if kind == "onnx" else TorchClassifier(path, device)

    def prediction_items(self, arguments: list[str], **options):
        from engine.outputs.predict import collect_images
        if not arguments:
            raise ValueError("give images or folders to predict")
        paths, skipped = collect_images(arguments)
        return [(path, path) for path in paths], skipped

    def prediction_input(self, payload):
        from engine.outputs.predict import read_image_input
        return read_image_input(payload)

    # -- the deep check -----------------------------------------------------------------------------------
    copy_measure = "aligned fine detail of the two images (band-passed thumbnails, crops up to 10 %)"
    copy_limit = 0.9        # planted crops/resizes/re-encodes of Fashion-MNIST photos: 95 % at or above

    def frozen_features(self, report, samples, backbone: str, *, seed: int = 0, control=None, progress=None,
                        device=None):
        from engine.search.assess import pretrained
        from engine.training.caches import FeatureCache, view_id, view_transform
        bundle = pretrained(report, backbone)
        if device is not None and device.type != "cpu":
            bundle.model.to(device)           # the cache runs each batch where the model is
        cache = FeatureCache(bundle.model)
        pre = bundle.preprocessing
        cache.planned_images = len(samples)
        return cache.features([s.path for s in samples], [s.label for s in samples], report.content_hash,
                              [view_transform(pre, "plain")], view_id(pre, "plain"), seed, control, progress,
                              skip_unreadable=True)[0]

    def audit_signatures(self, samples, *, control=None, progress=None):
        from engine.core.control import RunControl
        from engine.core.progress import no_progress
        from engine.data.pixels import signatures
        return signatures([s.path for s in samples], progress or no_progress, control or RunControl())

    def odd_samples(self, samples, signatures) -> dict[int, str]:
        from engine.data.pixels import odd_reasons
        return odd_reasons(signatures)

    def copy_similarity(self, samples, signatures, pairs):
        from engine.data.pixels import copy_similarities
        return copy_similarities([s.grey if s is not None else None for s in signatures], pairs)

    # -- the window ---------------------------------------------------------------------------------------
    sample_view = THUMBNAIL_VIEW
    assesses_backbones = True
    loads_weight_files = True
    pretrained_on = "ImageNet"
    own_settings = ("image_size", "augmentation", "cached_views", "tta")
    settings_key = "model/backbone"

    def input_size_words(self, size: int) -> str:
        return f"{size} × {size} px"

    def training_speed_hint(self, model) -> str:
        """The frozen part computed once is what makes training fast (engine.training.caches)."""
        from engine.training.caches import plan_cache
        plan = plan_cache(model)
        if plan.kind == "features":
            return "Fast: the backbone runs once per image, then only the head trains."
        if plan.kind == "activations":
            return "Faster: the frozen blocks run once per image; the rest trains on their output."
        return f"Every epoch runs the whole network ({plan.reason})."

    def layer_model(self, name: str, num_classes: int):
        """Random weights: only the structure is shown, and nothing is read from disk."""
        from engine.models.catalog import create_model
        bundle = create_model(name, num_classes, weights="random")
        return bundle.model, bundle.preprocessing.input_size


IMAGES = ImageModality()
