# Launch templates the Ray cluster launcher starts nodes from: IMDSv2 only
# (hop limit 1, so containers cannot reach the credentials), encrypted gp3
# root volumes, the cluster security group; the private subnets give no public IP. The region default
# also requires IMDSv2 for any instance launched without a template.

resource "aws_ec2_instance_metadata_defaults" "imdsv2" {
  http_tokens                 = "required"
  http_put_response_hop_limit = 1
  http_endpoint               = "enabled"
  instance_metadata_tags      = "disabled"
}

locals {
  node_roles = {
    head   = aws_iam_instance_profile.head.arn
    worker = aws_iam_instance_profile.worker.arn
  }
}

resource "aws_launch_template" "head" {
  name_prefix            = "${var.cluster_name}-head-"
  update_default_version = true
  ebs_optimized          = true

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
    device_name = "/dev/xvda"
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
  name_prefix            = "${var.cluster_name}-worker-"
  update_default_version = true
  ebs_optimized          = true

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
    device_name = "/dev/xvda"
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
