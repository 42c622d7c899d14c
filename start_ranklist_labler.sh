#!/bin/sh
# Start the rank-list labelling page on port 8904 (PORT=... sh start_ranklist_labler.sh to change it).
# PYTHON=... picks the interpreter. Arguments go to the page, e.g.:  sh start_ranklist_labler.sh --tiny --dataset_file my_labels.tsv
# --address 127.0.0.1 keeps the page on this machine (default 0.0.0.0: every interface, as the original);
# LABELER_PASSWORD=... (or --password ..., which `ps` shows) lets in only those who know the password.
# --tasks FILE (queue mode) is read here first: the server does not start on a task file it cannot read.
for arg in "$@"; do  # --help: the page's options, and no server
    case $arg in
        -h|--help)
            echo "sh start_ranklist_labler.sh [OPTIONS]: the labelling page on port ${PORT:-8904} (PORT=..., PYTHON=...," \
                 "LABELER_PASSWORD=... in the environment); the OPTIONS are the page's:"
            exec "${PYTHON:-python}" "$(dirname "$0")/ranklist_labeler.py" --help ;;
    esac
done
address=0.0.0.0
password=${LABELER_PASSWORD:-}
option=
for arg in "$@"; do  # the options this script needs to know about; the page reads all of them
    case $option in
        --address) address=$arg ;;
        --password) password=$arg; [ -n "$arg" ] || empty_password=1 ;;
        --tasks) tasks=$arg ;;
    esac
    case $arg in
        --tasks=*) tasks=${arg#--tasks=} ;;
        --skip_bad_lines) skip_bad_lines=--skip_bad_lines ;;
        --address=*) address=${arg#--address=} ;;
        --password=*) password=${arg#--password=}; [ -n "$password" ] || empty_password=1 ;;
    esac
    option=$arg
done
if [ -n "${empty_password:-}" ]; then
    echo "error: --password is empty: give a password, or leave the option out for a page without one" >&2
    exit 2
fi
if [ -z "$password" ] && { [ "$address" = 0.0.0.0 ] || [ "$address" = "::" ]; }; then
    echo "warning: listening on every interface without a password: anyone who reaches port ${PORT:-8904} can label," \
         "undo and download the dataset (set LABELER_PASSWORD, or --address 127.0.0.1)" >&2
fi
if [ -n "${tasks:-}" ]; then
    PYTHONPATH="$(dirname "$0")${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-python}" -m utils.tasks check "$tasks" \
        ${skip_bad_lines:-} || exit 2
fi
exec "${PYTHON:-python}" -m streamlit run "$(dirname "$0")/ranklist_labeler.py" \
    --server.port "${PORT:-8904}" --server.address "$address" --server.headless true \
    --browser.gatherUsageStats false --client.toolbarMode minimal -- "$@"
