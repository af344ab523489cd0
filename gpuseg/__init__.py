"""gpuseg: churn, migration and behavioural segmentation of telecom subscribers, on GPU or CPU."""

__version__ = "0.1.0"
