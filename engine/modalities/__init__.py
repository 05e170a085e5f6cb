"""The built-in modalities: `image` and `text`, each one package implementing
`engine.core.modality.Modality`. Everything that differs between images and texts is reached through
them; `engine.core.modality` finds them by name."""
