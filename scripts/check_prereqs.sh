#!/usr/bin/env bash
# One-line messages for missing prerequisites: Python 3.11 and Java 17+ (for Spark).
set -u
PY="${PYTHON:-python3.11}"
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "error: $PY not found. Install Python 3.11 (e.g. 'apt-get install python3.11 python3.11-venv', 'brew install python@3.11' or pyenv) or set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if ! "$PY" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  echo "error: $PY is not a Python 3.11 with venv; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
if ! command -v "$JAVA" >/dev/null 2>&1; then
  echo "error: Java 17+ is needed for Spark and was not found. Install it (Debian/Ubuntu: 'apt-get install openjdk-17-jre-headless', macOS: 'brew install openjdk@17') or set JAVA_HOME" >&2
  exit 1
fi
JV=$("$JAVA" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
MAJOR=${JV%%.*}; [ "$MAJOR" = "1" ] && MAJOR=$(echo "$JV" | cut -d. -f2)
if [ -z "$MAJOR" ] || [ "$MAJOR" -lt 17 ] 2>/dev/null; then
  echo "error: Java $JV found, Spark 4 needs Java 17+ (Debian/Ubuntu: 'apt-get install openjdk-17-jre-headless', macOS: 'brew install openjdk@17'; or set JAVA_HOME)" >&2
  exit 1
fi
