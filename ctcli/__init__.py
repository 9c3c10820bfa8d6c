"""ctcli: Segment-style events into CleverTap profiles, from a shell."""

__version__ = "0.1.0"
