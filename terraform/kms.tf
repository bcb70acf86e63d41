# One customer-managed key for the product bucket and the flow logs.

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:a key policy's "*" resource is this key only; the account root statement is AWS's default key policy, delegating to IAM
  #checkov:skip=CKV_AWS_111:a key policy's "*" resource is this key only; the logs statement is limited by the encryption-context condition
  #checkov:skip=CKV_AWS_356:a key policy's "*" resource is this key only
  # The account administers the key through IAM (the AWS default key policy);
  # "*" in a key policy means this key only.
  statement {
    sid       = "AccountAdministersKeyThroughIam"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    sid = "CloudWatchLogsEncryptFlowLogs"
    actions = [
      "kms:Encrypt*",
      "kms:Decrypt*",
      "kms:ReEncrypt*",
      "kms:GenerateDataKey*",
      "kms:Describe*",
    ]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:/eochain/${var.cluster_name}/vpc-flow-logs"]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "eochain ${var.cluster_name}: products bucket and flow logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "this" {
  name          = "alias/eochain-${var.cluster_name}"
  target_key_id = aws_kms_key.this.key_id
}
