"""The Train form's settings, as (TrainConfig field, label): what the form shows and what a project file
saves and restores, so a setting added here round-trips with no other change. Plain data: the Train panel
and `gui.project_io` both read it, and neither imports the other."""

CHOICE_FIELDS = ("optimizer", "schedule", "augmentation", "head", "tta", "recipe", "checkpoint")
FIELDS = (("epochs", "Epochs"), ("batch_size", "Batch size"), ("image_size", "Image size"),
          ("max_tokens", "Tokens per text"), ("lr", "Learning rate"), ("optimizer", "Optimizer"),
          ("schedule", "Schedule"), ("augmentation", "Augmentation"),
          ("cached_views", "Cached views"), ("head", "Head"), ("tta", "Test-time flip"),
          ("label_smoothing", "Label smoothing"), ("early_stopping", "Early stopping"), ("checkpoint", "Keep"),
          ("recipe", "Recipe"), ("head_epochs", "Head-only epochs"), ("device", "Device"))
