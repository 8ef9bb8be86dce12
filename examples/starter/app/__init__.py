# The starter app's package. Put your modules next to counter.py.
