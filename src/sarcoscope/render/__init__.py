"""Pictures a clinician checks: overlay.png and spine.png."""
