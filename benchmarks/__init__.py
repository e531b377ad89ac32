"""Speed measurements, side by side with PyTorch CPU; never part of the test run."""
