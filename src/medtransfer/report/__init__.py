"""The report: statistics (paired tests, bootstrap CIs, gap closed, win counts), tables, plots, HTML/Markdown."""
