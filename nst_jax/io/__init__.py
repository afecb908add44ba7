"""Files in and out: images, grids, the built-in scenes, video files,
optical flow, manifests and atomic writes."""
