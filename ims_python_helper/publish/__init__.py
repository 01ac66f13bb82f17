"""Publishing into IMS and S3: the image and recipe workflows, the upload engine, the run claim, the manifest."""
