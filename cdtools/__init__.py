"""cdtools: a Jenkins workspace to a running container through the Docker Engine API.

Standard library only; Python 3.8+. This package imports no step module, so that
``python -m cdtools.build`` and friends run cleanly.
"""
__version__ = "0.1.0"
