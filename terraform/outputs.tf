# Read by `eochain cluster-config --terraform-outputs` (JSON of `terraform output -json`).

output "region" {
  description = "AWS region of the cluster."
  value       = var.region
}

output "cluster_name" {
  description = "Ray cluster name (tag value scoping the head's EC2 rights)."
  value       = var.cluster_name
}

output "vpc_id" {
  description = "VPC of the cluster."
  value       = aws_vpc.this.id
}

output "private_subnet_ids" {
  description = "Private subnets for head and workers, one per availability zone."
  value       = aws_subnet.private[*].id
}

output "security_group_id" {
  description = "Security group of every node (Ray ports open within the group only)."
  value       = aws_security_group.cluster.id
}

output "head_instance_profile_arn" {
  description = "Instance profile of the Ray head node."
  value       = aws_iam_instance_profile.head.arn
}

output "worker_instance_profile_arn" {
  description = "Instance profile of Ray worker nodes."
  value       = aws_iam_instance_profile.worker.arn
}

output "head_launch_template_id" {
  description = "Launch template of the head node (IMDSv2, encrypted root volume)."
  value       = aws_launch_template.head.id
}

output "worker_launch_template_ids" {
  description = "Launch template of worker nodes per architecture (x86_64, arm64)."
  value       = { for arch, t in aws_launch_template.worker : arch => t.id }
}

output "ami_ids" {
  description = "AMI per architecture the launch templates and cluster-config use."
  value       = local.ami_ids
}

output "input_bucket_name" {
  description = "Bucket of raw imagery the nodes may read (empty: none)."
  value       = var.input_bucket_name
}

output "bucket_name" {
  description = "S3 bucket for products."
  value       = aws_s3_bucket.products.bucket
}

output "temporary_prefix" {
  description = "Key prefix under which temporary data expires."
  value       = var.temporary_prefix
}

output "kms_key_arn" {
  description = "KMS key encrypting the bucket and flow logs."
  value       = aws_kms_key.this.arn
}
