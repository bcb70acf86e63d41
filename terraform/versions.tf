# The AWS cluster eochain runs on: network, security groups, product bucket,
# IAM roles and launch templates for the Ray head and its spot workers.
# `terraform output -json > tf-outputs.json` feeds `eochain cluster-config`.

terraform {
  required_version = ">= 1.6.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.60"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, {
      "eochain:cluster"  = var.cluster_name
      "ray-cluster-name" = var.cluster_name
    })
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

# Zones are pinned by name so a zone AWS adds later never changes the network.
data "aws_availability_zones" "pinned" {
  state = "available"

  filter {
    name   = "zone-name"
    values = [for s in var.availability_zone_suffixes : "${var.region}${s}"]
  }
}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  azs        = data.aws_availability_zones.pinned.names
  # Ray's AWS node provider tags every instance it launches with this key;
  # the head's IAM policy lets it touch only instances carrying it.
  cluster_tag_key = "ray-cluster-name"
}
