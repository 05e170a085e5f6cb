"""What is wrong in a labelled dataset, found from one frozen pass of a pretrained model: likely label
errors (confident learning on out-of-fold probabilities), near-duplicates within and across splits, and
odd samples. `engine.audit.deep.inspect_deep` runs it all; each modality says how its samples are read
(features, pixels, texts) through engine.core.modality."""
