"""Result files into Markdown, HTML, CSV and plots: a block model rendered two ways, and
matplotlib figures drawn from the same documents; the resources section and plot (server,
machine and GPU use over each run) from the monitor's series.
"""

from loadbench.report.document import csv_text, html, markdown
from loadbench.report.models_section import models_blocks, tradeoff_plot
from loadbench.report.plots import plot_files
from loadbench.report.resources import resource_images, resources_blocks

__all__ = [
    "csv_text",
    "html",
    "markdown",
    "models_blocks",
    "plot_files",
    "resource_images",
    "resources_blocks",
    "tradeoff_plot",
]
