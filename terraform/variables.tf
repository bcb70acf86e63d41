variable "cluster_name" {
  description = "Name of the Ray cluster; tags every resource and scopes the head's EC2 rights."
  type        = string
  default     = "eochain"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}[a-z0-9]$", var.cluster_name))
    error_message = "cluster_name must be 4-32 characters of lower-case letters, digits and '-', starting with a letter."
  }
}

variable "region" {
  description = "AWS region of the cluster; put it where the imagery is to avoid egress."
  type        = string
  default     = "eu-west-3"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must look like an AWS region name, e.g. eu-west-3."
  }
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC (a /16 to /24)."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr)) && tonumber(split("/", var.vpc_cidr)[1]) >= 16 && tonumber(split("/", var.vpc_cidr)[1]) <= 24
    error_message = "vpc_cidr must be an IPv4 CIDR block between /16 and /24, e.g. 10.42.0.0/16."
  }
}

variable "availability_zone_suffixes" {
  description = "Zone letters of the region to spread private worker subnets over (more zones, more spot pools)."
  type        = list(string)
  default     = ["a", "b", "c"]

  validation {
    condition     = length(var.availability_zone_suffixes) >= 1 && length(var.availability_zone_suffixes) <= 6 && alltrue([for s in var.availability_zone_suffixes : can(regex("^[a-f]$", s))])
    error_message = "availability_zone_suffixes must list 1 to 6 zone letters from a to f, e.g. [\"a\", \"b\", \"c\"]."
  }
}

variable "admin_cidr_blocks" {
  description = "CIDR blocks allowed to reach the head node by SSH (for `ray up`/`ray attach`); never the whole internet."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.admin_cidr_blocks : can(cidrnetmask(c)) && !contains(["0.0.0.0/0", "::/0"], c)])
    error_message = "admin_cidr_blocks must be IPv4 CIDR blocks and must not contain 0.0.0.0/0 or ::/0."
  }
}

variable "enable_nat_gateway" {
  description = "Give the private subnets outbound internet access through a NAT gateway (package installs)."
  type        = bool
  default     = true
}

variable "bucket_name" {
  description = "Name of the S3 bucket for products and temporary data; empty for '<cluster_name>-products-<account id>'."
  type        = string
  default     = ""

  validation {
    condition     = var.bucket_name == "" || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be empty or a valid S3 bucket name (3-63 lower-case letters, digits, '.', '-')."
  }
}

variable "temporary_prefix" {
  description = "Key prefix of temporary data (intermediates, uncommitted uploads) that the lifecycle rule expires."
  type        = string
  default     = "tmp/"

  validation {
    condition     = can(regex("^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*/$", var.temporary_prefix))
    error_message = "temporary_prefix must be a non-empty key prefix ending in '/', e.g. tmp/."
  }
}

variable "temporary_expiry_days" {
  description = "Days after which objects under temporary_prefix are deleted."
  type        = number
  default     = 7

  validation {
    condition     = var.temporary_expiry_days >= 1 && var.temporary_expiry_days <= 365
    error_message = "temporary_expiry_days must be between 1 and 365."
  }
}

variable "noncurrent_version_expiry_days" {
  description = "Days after which overwritten (non-current) object versions are deleted."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_expiry_days >= 1 && var.noncurrent_version_expiry_days <= 3650
    error_message = "noncurrent_version_expiry_days must be between 1 and 3650."
  }
}

variable "log_retention_days" {
  description = "Retention of VPC flow logs in CloudWatch, in days."
  type        = number
  default     = 365

  validation {
    condition     = contains([365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch retention of at least a year: 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653."
  }
}

variable "root_volume_gib" {
  description = "Size of each node's encrypted root volume, in GiB (scratch space for tiles)."
  type        = number
  default     = 100

  validation {
    condition     = var.root_volume_gib >= 20 && var.root_volume_gib <= 4096
    error_message = "root_volume_gib must be between 20 and 4096."
  }
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.tags) : !startswith(k, "aws:")])
    error_message = "tags keys must not start with the reserved prefix 'aws:'."
  }
}

variable "ami_ids" {
  description = "AMI per architecture (keys x86_64, arm64) overriding Ubuntu 24.04 from the public SSM parameter; must boot from /dev/sda1 and have python3.12."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.ami_ids : contains(["x86_64", "arm64"], k) && can(regex("^ami-[0-9a-f]{8,17}$", v))])
    error_message = "ami_ids keys must be x86_64 or arm64 and values AMI ids like ami-0123456789abcdef0."
  }
}

variable "head_architecture" {
  description = "Architecture of the head's instance type (x86_64 for the default m7i.xlarge, arm64 for Graviton)."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.head_architecture)
    error_message = "head_architecture must be x86_64 or arm64."
  }
}

variable "input_bucket_name" {
  description = "S3 bucket holding the raw imagery (STAC items, scenes, RPC sidecars) that head and workers may read, never write; empty for none."
  type        = string
  default     = ""

  validation {
    condition     = var.input_bucket_name == "" || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.input_bucket_name))
    error_message = "input_bucket_name must be empty or a valid S3 bucket name (3-63 lower-case letters, digits, '.', '-')."
  }
}
