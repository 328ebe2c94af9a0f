"""The operator console: a Streamlit app, a thin client of ``backend.control`` (no business rule, no SQL)."""
