# Launch templates the Ray cluster launcher starts nodes from: Canonical's
# Ubuntu 24.04 AMI of the node's architecture (from the public SSM parameter,
# overridable with var.ami_ids), its root device /dev/sda1 as an encrypted
# gp3 volume, user data that prepares Python 3.12 and the SSM agent, IMDSv2
# only (hop limit 1, so containers cannot reach the credentials) and the
# cluster security group; the private subnets give no public IP. One worker
# template per architecture: `eochain cluster-config` picks the one matching
# each instance type. The region default also requires IMDSv2 for any
# instance launched without a template.

resource "aws_ec2_instance_metadata_defaults" "imdsv2" {
  http_tokens                 = "required"
  http_put_response_hop_limit = 1
  http_endpoint               = "enabled"
  instance_metadata_tags      = "disabled"
}

# Public parameters Canonical keeps pointing at the current Ubuntu 24.04 AMI.
data "aws_ssm_parameter" "ubuntu" {
  for_each = { x86_64 = "amd64", arm64 = "arm64" }

  name = "/aws/service/canonical/ubuntu/server/24.04/stable/current/${each.value}/hvm/ebs-gp3/ami-id"
}

locals {
  node_roles = {
    head   = aws_iam_instance_profile.head.arn
    worker = aws_iam_instance_profile.worker.arn
  }
  # An AMI id is public information: no need to keep it sensitive.
  ami_ids = {
    for arch, p in data.aws_ssm_parameter.ubuntu : arch => lookup(var.ami_ids, arch, nonsensitive(p.value))
  }
  root_device = "/dev/sda1" # Ubuntu AMIs boot from /dev/sda1
  user_data   = base64encode(file("${path.module}/user_data.sh"))
}

resource "aws_launch_template" "head" {
  name_prefix            = "${var.cluster_name}-head-"
  update_default_version = true
  ebs_optimized          = true
  image_id               = local.ami_ids[var.head_architecture]
  user_data              = local.user_data

  iam_instance_profile {
    arn = local.node_roles.head
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  monitoring {
    enabled = true
  }

  # Security group only: Ray's launcher names the (private) subnet on each request.
  vpc_security_group_ids = [aws_security_group.cluster.id]

  block_device_mappings {
    device_name = local.root_device
    ebs {
      volume_size           = var.root_volume_gib
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = { (local.cluster_tag_key) = var.cluster_name, "eochain:node" = "head" }
  }

  tag_specifications {
    resource_type = "volume"
    tags          = { (local.cluster_tag_key) = var.cluster_name, "eochain:node" = "head" }
  }
}

resource "aws_launch_template" "worker" {
  for_each = local.ami_ids

  name_prefix            = "${var.cluster_name}-worker-${each.key}-"
  update_default_version = true
  ebs_optimized          = true
  image_id               = each.value
  user_data              = local.user_data

  iam_instance_profile {
    arn = local.node_roles.worker
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  monitoring {
    enabled = true
  }

  # Security group only: Ray's launcher names the (private) subnet on each request.
  vpc_security_group_ids = [aws_security_group.cluster.id]

  block_device_mappings {
    device_name = local.root_device
    ebs {
      volume_size           = var.root_volume_gib
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = { (local.cluster_tag_key) = var.cluster_name, "eochain:node" = "worker" }
  }

  tag_specifications {
    resource_type = "volume"
    tags          = { (local.cluster_tag_key) = var.cluster_name, "eochain:node" = "worker" }
  }
}
