"""Result files into Markdown, HTML, CSV and plots: a block model rendered two ways, and
matplotlib figures drawn from the same documents.
"""

from loadbench.report.document import csv_text, html, markdown
from loadbench.report.plots import plot_files

__all__ = ["csv_text", "html", "markdown", "plot_files"]
