"""The report: tables and Markdown (``tables``), the numbers behind figures (``figures``), and
the self-contained HTML page (``html/``: a chart module apart from the page's sections)."""
