"""Images and datasets: decoding, scanning and checking what the user dropped, transforms, the image cache."""
