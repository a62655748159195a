"""Handing a finished run over: the dataset card, trainer exports, the HTML report, Hub publishing."""
