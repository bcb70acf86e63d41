# Least-privilege roles. The head (Ray autoscaler + campaign driver) may
# launch, tag, stop and terminate only instances tagged with this cluster's
# name, from this cluster's launch templates, pass only the worker role, and
# use the product bucket. Workers may use only the product bucket (and its
# key, through S3 only). Both may read (never write) the input bucket of raw
# imagery when one is named, and both carry the SSM agent's rights (what
# AmazonSSMManagedInstanceCore grants, less parameter and document reads) so
# operators reach them through Session Manager.

locals {
  ec2_arn = "arn:${local.partition}:ec2:${var.region}:${local.account_id}"
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "bucket_access" {
  statement {
    sid = "ListProductBucket"
    # ListBucketMultipartUploads: the end-of-run sweep aborts a killed writer's upload
    actions   = ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"]
    resources = [aws_s3_bucket.products.arn]
  }

  statement {
    sid       = "ReadWriteProducts"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.products.arn}/*"]
  }

  statement {
    sid       = "UseBucketKeyThroughS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "head_ec2" {
  # Describe calls cannot be scoped to resources in IAM.
  statement {
    sid = "DescribeForAutoscaler"
    actions = [
      "ec2:DescribeInstances",
      "ec2:DescribeInstanceStatus",
      "ec2:DescribeInstanceTypes",
      "ec2:DescribeImages",
      "ec2:DescribeSubnets",
      "ec2:DescribeSecurityGroups",
      "ec2:DescribeKeyPairs",
      "ec2:DescribeLaunchTemplates",
      "ec2:DescribeLaunchTemplateVersions",
      "ec2:DescribeSpotPriceHistory",
      "ec2:DescribeAvailabilityZones",
    ]
    resources = ["*"]
  }

  # New instances and volumes must carry the cluster tag.
  statement {
    sid     = "LaunchTaggedClusterNodes"
    actions = ["ec2:RunInstances"]
    resources = [
      "${local.ec2_arn}:instance/*",
      "${local.ec2_arn}:volume/*",
      "${local.ec2_arn}:spot-instances-request/*",
    ]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/${local.cluster_tag_key}"
      values   = [var.cluster_name]
    }
  }

  # ... into this cluster's subnets and security group, from its launch templates.
  statement {
    sid     = "LaunchIntoClusterNetwork"
    actions = ["ec2:RunInstances"]
    resources = concat(
      [for s in aws_subnet.private : s.arn],
      [for t in aws_launch_template.worker : t.arn],
      [
        aws_security_group.cluster.arn,
        aws_launch_template.head.arn,
        "${local.ec2_arn}:network-interface/*",
        "${local.ec2_arn}:key-pair/*",
        "arn:${local.partition}:ec2:${var.region}::image/*",
      ],
    )
  }

  statement {
    sid       = "TagOnLaunch"
    actions   = ["ec2:CreateTags"]
    resources = ["${local.ec2_arn}:instance/*", "${local.ec2_arn}:volume/*", "${local.ec2_arn}:spot-instances-request/*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["RunInstances"]
    }
  }

  statement {
    sid       = "ManageOnlyClusterNodes"
    actions   = ["ec2:CreateTags", "ec2:StartInstances", "ec2:StopInstances", "ec2:TerminateInstances"]
    resources = ["${local.ec2_arn}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:ResourceTag/${local.cluster_tag_key}"
      values   = [var.cluster_name]
    }
  }

  statement {
    sid       = "PassOnlyWorkerRole"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.worker.arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ec2.amazonaws.com"]
    }
  }

  # Only when ImageId is left to EC2 as resolve:ssm: (no Terraform ami_ids).
  statement {
    sid       = "ResolveUbuntuAmiParameter"
    actions   = ["ssm:GetParameters", "ssm:GetParameter"]
    resources = ["arn:${local.partition}:ssm:${var.region}::parameter/aws/service/canonical/ubuntu/*"]
  }

  statement {
    sid       = "SpotServiceLinkedRole"
    actions   = ["iam:CreateServiceLinkedRole"]
    resources = ["arn:${local.partition}:iam::${local.account_id}:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot"]
    condition {
      test     = "StringEquals"
      variable = "iam:AWSServiceName"
      values   = ["spot.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "head" {
  name               = "${var.cluster_name}-ray-head"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy" "head_ec2" {
  name   = "launch-cluster-workers"
  role   = aws_iam_role.head.id
  policy = data.aws_iam_policy_document.head_ec2.json
}

resource "aws_iam_role_policy" "head_bucket" {
  name   = "product-bucket"
  role   = aws_iam_role.head.id
  policy = data.aws_iam_policy_document.bucket_access.json
}

resource "aws_iam_instance_profile" "head" {
  name = "${var.cluster_name}-ray-head"
  role = aws_iam_role.head.name
}

resource "aws_iam_role" "worker" {
  name               = "${var.cluster_name}-ray-worker"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy" "worker_bucket" {
  name   = "product-bucket"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.bucket_access.json
}

resource "aws_iam_instance_profile" "worker" {
  name = "${var.cluster_name}-ray-worker"
  role = aws_iam_role.worker.name
}

data "aws_iam_policy_document" "input_read" {
  statement {
    sid       = "ListInputBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = ["arn:${local.partition}:s3:::${var.input_bucket_name}"]
  }

  statement {
    sid       = "ReadInputObjects"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["arn:${local.partition}:s3:::${var.input_bucket_name}/*"]
  }
}

resource "aws_iam_role_policy" "input_read" {
  for_each = var.input_bucket_name == "" ? {} : { head = aws_iam_role.head.id, worker = aws_iam_role.worker.id }

  name   = "read-input-bucket"
  role   = each.value
  policy = data.aws_iam_policy_document.input_read.json
}

# The SSM agent's own calls. The ssmmessages/ec2messages actions have no
# resource type to scope them to; the agent's registration is scoped to
# this account's instances in the region.
data "aws_iam_policy_document" "ssm_agent" {
  #checkov:skip=CKV_AWS_111:ssmmessages and ec2messages actions of the SSM agent support no resource-level scoping
  #checkov:skip=CKV_AWS_356:ssmmessages and ec2messages actions of the SSM agent support no resource-level scoping
  statement {
    sid       = "RegisterThisInstance"
    actions   = ["ssm:UpdateInstanceInformation"]
    resources = ["${local.ec2_arn}:instance/*"]
  }

  statement {
    sid = "SessionManagerChannels"
    actions = [
      "ssmmessages:CreateControlChannel",
      "ssmmessages:CreateDataChannel",
      "ssmmessages:OpenControlChannel",
      "ssmmessages:OpenDataChannel",
      "ec2messages:AcknowledgeMessage",
      "ec2messages:DeleteMessage",
      "ec2messages:FailMessage",
      "ec2messages:GetEndpoint",
      "ec2messages:GetMessages",
      "ec2messages:SendReply",
    ]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "ssm_agent" {
  for_each = { head = aws_iam_role.head.id, worker = aws_iam_role.worker.id }

  name   = "ssm-session-manager"
  role   = each.value
  policy = data.aws_iam_policy_document.ssm_agent.json
}
