"""Run configurations: files for `main.py --config=configs/NAME.py`.

A package so that bench/ scripts and tests can import them too.
"""
