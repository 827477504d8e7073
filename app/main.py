"""RobustLens: `streamlit run app/main.py`. Navigation over the pages in app/views/.

The backend runs in this process by default; set BACKEND_URL=http://host:port to use a server
started with `python -m backend.transport.server` instead.
"""
from __future__ import annotations

# The packages `app` and `backend` come from the installed project (`make install`: pip install -e .).
# app.session.client sets OpenMP's passive waiting (backend.core.runtime.quiet_openmp) as it loads,
# before anything imports torch.
import streamlit as st

from app.session import access
from app.session.client import explain_error, get_client


def _favicon():
    """A shield drawn here: a ":material/..." or emoji page icon makes the browser fetch the icon from
    fonts.gstatic.com (an outside host; the app must work offline). Served by the app itself."""
    from PIL import Image, ImageDraw

    im = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(im).polygon([(32, 3), (58, 12), (55, 40), (32, 61), (9, 40), (6, 12)], fill="#2f5bd3")
    return im


st.set_page_config(page_title="RobustLens", page_icon=_favicon(), layout="wide",
                   initial_sidebar_state="expanded")

# One file per page in app/views/. Not app/pages/: Streamlit treats a pages/ folder beside the entry
# script as the old file-based navigation, and a link straight to /embeddings would then run that file
# without this script (no page config, no shared sidebar).
PAGES = [
    st.Page("views/attack_lab.py", title="Attack lab", icon=":material/bolt:", default=True),
    st.Page("views/lesson.py", title="Lesson", icon=":material/school:"),
    st.Page("views/saliency_studio.py", title="Saliency studio", icon=":material/visibility:"),
    st.Page("views/embeddings.py", title="Embedding explorer", icon=":material/scatter_plot:"),
    st.Page("views/robustness.py", title="Robustness", icon=":material/monitoring:"),
    st.Page("views/corruptions.py", title="Corruptions", icon=":material/blur_on:"),
    st.Page("views/feature_lens.py", title="Feature lens", icon=":material/center_focus_strong:"),
    st.Page("views/train.py", title="Train", icon=":material/model_training:"),
    st.Page("views/zoo.py", title="Model zoo", icon=":material/inventory_2:"),
]

# Streamlit caps a multiselect at ~155 px and scrolls the rest: with five or more models some chips
# were hidden (removing one took two clicks). Let the model pickers grow to show every chip.
st.html('<style>[data-testid="stMultiSelect"] div { max-height: none !important; }</style>')

if not access.admitted():  # a classroom's app without its key in the link (app/session/access.py)
    st.stop()

nav = st.navigation(PAGES)

with st.sidebar:
    try:
        client = get_client()
        where = "in this process" if client.transport == "inprocess" else f"at {client.base_url}"
        st.caption(f"RobustLens - backend {where}")
    except Exception as e:  # the page below still draws and shows the same problem where it matters
        st.error(explain_error(e), icon=":material/error:")

nav.run()
