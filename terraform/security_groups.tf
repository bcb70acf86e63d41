# One security group for every node of the cluster. Ray's ports, and SSH that
# the head's autoscaler uses to set workers up, are open only to members of the
# group itself; SSH from outside only from the admin CIDR blocks (none by
# default). Nothing is open to 0.0.0.0/0. Outbound: anything inside the
# cluster, HTTPS to AWS APIs and package mirrors, S3 through its endpoint.

locals {
  # Ports pinned by the start commands `eochain cluster-config` renders.
  ray_ports = {
    ssh            = { from = 22, to = 22, what = "SSH from the head's autoscaler to set workers up" }
    gcs            = { from = 6379, to = 6379, what = "Ray GCS server" }
    node_manager   = { from = 6380, to = 6380, what = "Ray node manager" }
    object_manager = { from = 6381, to = 6381, what = "Ray object manager" }
    metrics        = { from = 8080, to = 8080, what = "Ray metrics export (Prometheus scrape)" }
    dashboard      = { from = 8265, to = 8265, what = "Ray dashboard and job server" }
    client         = { from = 10001, to = 10001, what = "Ray client server" }
    workers        = { from = 10002, to = 19999, what = "Ray worker processes" }
    agents         = { from = 52365, to = 52367, what = "Ray dashboard and runtime-env agents" }
  }
}

resource "aws_security_group" "cluster" {
  name        = "${var.cluster_name}-ray"
  description = "Ray head and workers of ${var.cluster_name}: Ray ports open only within this group"
  vpc_id      = aws_vpc.this.id

  tags = { Name = "${var.cluster_name}-ray" }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group_rule" "ray_ingress" {
  for_each = local.ray_ports

  security_group_id        = aws_security_group.cluster.id
  type                     = "ingress"
  description              = "${each.value.what} from cluster members only"
  protocol                 = "tcp"
  from_port                = each.value.from
  to_port                  = each.value.to
  source_security_group_id = aws_security_group.cluster.id
}

resource "aws_security_group_rule" "ssh_ingress" {
  #checkov:skip=CKV_AWS_24:admin_cidr_blocks is empty by default and its validation rejects 0.0.0.0/0 and ::/0
  count = length(var.admin_cidr_blocks) > 0 ? 1 : 0

  security_group_id = aws_security_group.cluster.id
  type              = "ingress"
  description       = "SSH for ray up/attach from the admin networks"
  protocol          = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_blocks       = var.admin_cidr_blocks
}

resource "aws_security_group_rule" "cluster_egress" {
  security_group_id        = aws_security_group.cluster.id
  type                     = "egress"
  description              = "All TCP to cluster members (Ray's ports on other nodes)"
  protocol                 = "tcp"
  from_port                = 0
  to_port                  = 65535
  source_security_group_id = aws_security_group.cluster.id
}

resource "aws_security_group_rule" "https_egress" {
  security_group_id = aws_security_group.cluster.id
  type              = "egress"
  description       = "HTTPS to AWS APIs (EC2, STS) and package mirrors through the NAT gateway"
  protocol          = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_blocks       = ["0.0.0.0/0"]
}

resource "aws_security_group_rule" "s3_egress" {
  security_group_id = aws_security_group.cluster.id
  type              = "egress"
  description       = "HTTPS to S3 through the gateway endpoint"
  protocol          = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_ids   = [aws_vpc_endpoint.s3.prefix_list_id]
}

resource "aws_security_group_rule" "http_egress" {
  security_group_id = aws_security_group.cluster.id
  type              = "egress"
  description       = "HTTP to Ubuntu's apt mirrors (python3.12-venv) through the NAT gateway"
  protocol          = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_blocks       = ["0.0.0.0/0"]
}
