#!/bin/bash
# cloud-init user data of every node (head and workers): what the setup that
# `eochain cluster-config` renders expects to find on Ubuntu 24.04.
set -euo pipefail

# Python 3.12 with its venv module (Ubuntu leaves ensurepip out).
export DEBIAN_FRONTEND=noninteractive
apt-get -qq update
apt-get -qq install -y python3.12-venv

# The SSM agent (a snap on Canonical's AMIs) carries operator sessions: no public IP, no SSH from outside.
snap start amazon-ssm-agent || systemctl start amazon-ssm-agent
