"""featurenerf-bench's measurements (`parts`) and the speed targets they are checked against (`targets`)."""
