"""RobustLens Streamlit app: `streamlit run app/main.py`. Imports go app -> backend only."""
