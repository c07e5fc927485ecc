# dicom-gw appliance image, for Debian's packer 1.6.6 (HCL2; the qemu builder and the ansible
# provisioner are built in, nothing is downloaded). `make image` runs it after
# packer/build-base-disk.sh has made the base disk; see mk/image.mk.
#   CHECKPOINT_DISABLE=1 packer build -var build_dir=packer/.build packer/dicom-gw.pkr.hcl

variable "build_dir" {
  type        = string
  description = "Where build-base-disk.sh wrote base.qcow2, vmlinuz, initrd.img, build_key, root.uuid."
  default     = "packer/.build"
}

variable "output_dir" {
  type    = string
  default = "packer/output"
}

variable "root_uuid" {
  type        = string
  description = "UUID of the base disk's root filesystem (build_dir/root.uuid)."
}

variable "accelerator" {
  type        = string
  description = "tcg here (KVM hangs with Debian's kernel on these hosts); kvm where it works."
  default     = "tcg"
}

variable "memory" {
  type    = number
  default = 3072
}

variable "cpus" {
  type    = number
  default = 2
}

variable "idempotence" {
  type        = string
  description = "Second run of appliance.yml that must change nothing: strict (make image fails afterwards, the image is kept), report, off."
  default     = "strict"
}

variable "mitogen_strategy_plugins" {
  type        = string
  description = "ansible_mitogen's strategy plugin directory (make image finds it in .venv-ansible); empty: Ansible's linear strategy."
  default     = ""
}

variable "build_user" {
  type    = string
  default = "gwadmin"
}

locals {
  # Mitogen: one Python interpreter in the VM for the whole run instead of an SSH session, sudo
  # and a module import per task, which under TCG cost more than most tasks' work.
  ansible_strategy = var.mitogen_strategy_plugins == "" ? "linear" : "mitogen_linear"
  # The environment of both runs of the playbook (the idempotence run adds its own two).
  ansible_env = [
    "ANSIBLE_CONFIG=${path.root}/../ansible.cfg",
    "ANSIBLE_ROLES_PATH=${path.root}/../roles",
    "ANSIBLE_HOST_KEY_CHECKING=False",
    "ANSIBLE_SSH_ARGS=-o ControlMaster=auto -o ControlPersist=300s -o ServerAliveInterval=30",
    "ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks",
    "ANSIBLE_STRATEGY_PLUGINS=${var.mitogen_strategy_plugins}",
    "ANSIBLE_STRATEGY=${local.ansible_strategy}",
  ]
}

source "qemu" "dicom-gw" {
  accelerator      = var.accelerator
  disk_image       = true
  iso_url          = "${var.build_dir}/base.qcow2"
  iso_checksum     = "file:${var.build_dir}/base.qcow2.sha256"
  use_backing_file = false
  # Keep the base disk's size: its GPT backup header stays at the end and the partitions fill it.
  skip_resize_disk   = true
  format             = "qcow2"
  disk_interface     = "virtio"
  disk_compression   = true
  disk_discard       = "unmap"
  disk_detect_zeroes = "unmap"
  net_device         = "virtio-net"
  memory             = var.memory
  cpus               = var.cpus
  headless           = true
  output_directory   = var.output_dir
  vm_name            = "dicom-gw.qcow2"
  # The base disk has no boot loader yet: boot its kernel directly; the first step installs GRUB.
  qemuargs = [
    ["-kernel", "${var.build_dir}/vmlinuz"],
    ["-initrd", "${var.build_dir}/initrd.img"],
    ["-append", "root=UUID=${var.root_uuid} ro console=ttyS0,115200 net.ifnames=1"],
    ["-serial", "file:${var.build_dir}/serial-build.log"],
  ]
  communicator         = "ssh"
  ssh_username         = var.build_user
  ssh_private_key_file = "${var.build_dir}/build_key"
  ssh_timeout          = "15m"
  # Remove the build's key and passwordless sudo last (they are needed until here).
  shutdown_command = "sudo sh -c 'rm -f /etc/sudoers.d/90-packer-build; : > /home/${var.build_user}/.ssh/authorized_keys; systemctl poweroff'"
  shutdown_timeout = "10m"
}

build {
  sources = ["source.qemu.dicom-gw"]

  provisioner "shell" {
    execute_command = "sudo -H sh -c '{{ .Vars }} {{ .Path }}'"
    inline = [
      "grub-install /dev/vda",
      "update-grub",
    ]
  }

  provisioner "ansible" {
    playbook_file       = "${path.root}/../playbooks/appliance.yml"
    user                = var.build_user
    use_proxy           = false
    inventory_directory = "${path.root}/inventory"
    host_alias          = "dicom-gw-image"
    groups              = ["dicom_gw_database", "dicom_gw_gateway", "dicom_gw_proxy"]
    extra_arguments     = ["--become", "--diff"]
    ansible_env_vars    = local.ansible_env
  }

  # Idempotence: the same playbook again against the same VM must report no change
  # (packer/ansible-idempotence.sh reads the recap; the log stays in build_dir).
  provisioner "ansible" {
    command             = "${path.root}/ansible-idempotence.sh"
    playbook_file       = "${path.root}/../playbooks/appliance.yml"
    user                = var.build_user
    use_proxy           = false
    inventory_directory = "${path.root}/inventory"
    host_alias          = "dicom-gw-image"
    groups              = ["dicom_gw_database", "dicom_gw_gateway", "dicom_gw_proxy"]
    extra_arguments     = ["--become", "--diff"]
    ansible_env_vars = concat(local.ansible_env, [
      "DICOM_GW_IDEMPOTENCE=${var.idempotence}",
      "IDEMPOTENCE_LOG=${var.build_dir}/idempotence.log",
    ])
  }

  provisioner "shell" {
    # Packer uploads the script to /tmp, which the hardening role has mounted noexec by now:
    # run it through bash rather than executing the file.
    execute_command  = "sudo -H sh -c '{{ .Vars }} bash {{ .Path }}'"
    environment_vars = ["BUILD_USER=${var.build_user}"]
    script           = "${path.root}/cleanup.sh"
  }

  # A VMware-importable copy and SHA-256 sums next to the qcow2.
  post-processor "shell-local" {
    inline = [
      "qemu-img convert -O vmdk -o subformat=streamOptimized ${var.output_dir}/dicom-gw.qcow2 ${var.output_dir}/dicom-gw.vmdk",
      "cd ${var.output_dir} && sha256sum dicom-gw.qcow2 dicom-gw.vmdk > SHA256SUMS",
    ]
  }
}
