"""The one exception a benchmark raises instead of printing a figure that would be wrong."""


class Refused(Exception):
    """A figure would be wrong (a request failed, a page was left out): the message says why,
    and no figure is printed."""
