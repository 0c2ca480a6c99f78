"""pcvhub: the event-sourced integration hub for personalized cancer vaccines."""

__version__ = "0.1.0"
