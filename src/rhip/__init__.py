"""RHIP: Regional Health Information Platform."""

__version__ = "0.1.0"
