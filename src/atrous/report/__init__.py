"""Performance reports: what was tuned on a machine, how fast it runs against PyTorch, ONNX
Runtime and NumPy, and how close it gets to the machine's measured ceilings.

The pipeline, one module per step (nothing here is imported by ``import atrous``)::

    ceilings.py   measure bandwidth and arithmetic peak (CPU: Numba; GPU: torch)
    store.py      rows and ceilings files beside the tuning database
    rows.py       the tidy benchmark row (written by atrous.jobs.bench), CSV and JSON
    data.py       one machine's records, trial log, rows and ceilings, read from files
    summary.py    one line per op: "dilated_conv2d: 1.4x PyTorch, 71% of measured peak"
    tables.py     tables as plain-text cells      plots.py   PNG plots (matplotlib, Agg)
    page.py       the page as data                build.py   a machine's page
    compare.py    two machines or runs side by side
    html.py       the page as one escaped, self-contained HTML file (jinja2)
    markdown.py   the same page as Markdown
    render.py     writes reports/<fingerprint id>/ (index.html, report.md, CSVs, plots/)
    browser.py    loads a page in headless Chromium and checks it (tests, screenshots)
    commands.py   `atrous bench`, `atrous ceilings`, `atrous report`
"""
