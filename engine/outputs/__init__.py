"""What a trained model gives the user: prediction, verified export, Grad-CAM heat maps."""
