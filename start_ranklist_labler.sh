#!/bin/sh
# Start the rank-list labelling page on port 8904 (PORT=... sh start_ranklist_labler.sh to change it).
# PYTHON=... picks the interpreter. Arguments go to the page, e.g.:  sh start_ranklist_labler.sh --tiny --dataset_file my_labels.tsv
exec "${PYTHON:-python}" -m streamlit run "$(dirname "$0")/ranklist_labeler.py" \
    --server.port "${PORT:-8904}" --server.headless true --browser.gatherUsageStats false -- "$@"
