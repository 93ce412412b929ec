"""Views of TCP conversations: ladder diagrams (text and SVG) and plots.

They read rows built from engine events (``tcp.events``) or inferred from a
capture; nothing here re-derives state from log text.
"""
