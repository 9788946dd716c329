# tdforge production image: Ollama serving DeepSeek-R1 7B in a real TDX guest.
#
# The operator supplies where the model blobs come from and the payload's
# dm-verity root hash (printed by a first `builder build`):
#
#   builder build -var ollama_registry=https://<registry> \
#     -var model_root_hash=<hex> -o images/confidential-ai manifests/confidential-ai.hcl
#
# Every blob is pinned by digest, so the registry is not trusted.

variable "ollama_registry" {
  type        = string
  description = "Base URL of an OCI registry serving the Ollama library blobs, without a trailing slash (e.g. https://models.example.internal). Blobs are fetched from <base>/v2/library/<model>/blobs/sha256:<digest> and checked against the pinned digests."
  validation {
    condition     = can(regex("^https://[^/]+(/.*[^/])?$", var.ollama_registry))
    error_message = "ollama_registry must be an https:// base URL without a trailing slash."
  }
}

variable "model_root_hash" {
  type        = string
  description = "dm-verity root hash (64 lowercase hex digits) of the model payload. It pins the payload so that `builder measure` can compute RTMR3 without downloading 4.7 GB, and `builder build` fails if the built payload differs."
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.model_root_hash))
    error_message = "model_root_hash must be 64 lowercase hexadecimal digits."
  }
}

locals {
  model_blobs = "${var.ollama_registry}/v2/library/deepseek-r1/blobs"
}

image {
  name              = "tdforge-confidential-ai"
  version           = "0.1.0"
  source_date_epoch = 1735689600 # 2025-01-01T00:00:00Z
  dev               = false
}

# TDVF: Debian 12's unified OVMF.fd carries the TDX metadata.
firmware {
  deb {
    package = "ovmf"
    version = "2022.11-6+deb12u2"
    arch    = "all"
    sha256  = "e73d3d1a8799f7f6fc16b73501d913edcdd86237556fbff30693e747e6dc262e"
    path    = "usr/share/ovmf/OVMF.fd"
  }
  sha256 = "7b456907dd0786d415999e801a1ac4637b8ed4d7cf5378cfc6edbe5e574dd773" # extracted OVMF.fd
}

# A TD guest needs CONFIG_INTEL_TDX_GUEST=y and the tdx-guest module
# (CONFIG_TDX_GUEST_DRIVER, configfs-tsm quotes, kernel >= 6.7). Debian 12's
# 6.1 kernel has neither, and Debian 13's kernels are not in this builder's
# package sources, so this uses the Debian 12 backported 6.12 cloud kernel,
# which has both. Its modules are xz-compressed; virtio_pci is built in.
kernel {
  deb {
    package = "linux-image-6.12.117+deb12-cloud-amd64-unsigned"
    version = "6.12.117-1~deb12u1"
    sha256  = "670b2688bcf94c24693f7c7e1fc9776ff2e202ff15553a2614f79415d48a6607"
    path    = "boot/vmlinuz-6.12.117+deb12-cloud-amd64"
  }
  sha256  = "391d229a7c641821b7414d001c090043d977e11daf865362d36ea832ccf0dd69" # extracted vmlinuz
  modules = ["virtio_blk", "virtio_net", "dm-verity", "erofs", "tdx-guest"]
  cmdline = "console=ttyS0 panic=-1 quiet loglevel=4"
}

vm {
  cpus     = 8
  memory   = "16G"
  platform = "qemu-10.2-tdx-edk2-2025-08"
}

tdx {
  simulate = false
  debug    = false
}

network {
  mode    = "static"
  address = "10.0.2.15/24"
  gateway = "10.0.2.2"
}

payload "ollama" {
  go {
    module  = "github.com/ollama/ollama"
    version = "v0.5.7"
    sum     = "h1:YFxF3UYc3TbOH/j/OhJoxl4LOvPQRcuKUdI5txs/pkc="
    cgo     = true
    static  = true
    ldflags = ["-X github.com/ollama/ollama/version.Version=0.5.7"]
    tags    = ["netgo", "osusergo"] # pure-Go DNS and user lookup: the static glibc never needs NSS modules
    output  = "bin/ollama"
  }
}

# Encrypting the model: uncomment the key_broker block and the model's
# encryption block, run a key broker the TD reaches (verifier serve
# --resources DIR, or Trustee's KBS) and build with --secrets DIR. The first
# build creates DIR/<owner>/models/deepseek-r1-7b with a fresh random key
# (mode 0600) that only this image's reference values may receive; keep it
# and the reference values together. It stays commented here because the
# published reference values must be reproducible by anyone from this
# repository, and an encrypted payload's root hash depends on its owner's
# secret key. Add "dm-crypt", "xts" and "aesni_intel" to kernel.modules too.
# docs/data-path.md explains the chain.
#
# key_broker {
#   url       = "https://kbs.example.internal:8444"
#   ca_sha256 = "<sha256 of the DER of the broker's certificate or its CA>"
# }

# deepseek-r1:7b as published in the first half of 2025 (manifest digest
# 0a8c266910232fd3291e71e5ba1e058cc5af9d411192cf88b6d30e92b6e73163).
payload "model" {
  ollama_model {
    name = "deepseek-r1"
    tag  = "7b"
    gguf {
      url    = "${local.model_blobs}/sha256:96c415656d377afbff962f6cdb2394ab092ccbcbaab4b82525bc4ca800fe8a49"
      sha256 = "96c415656d377afbff962f6cdb2394ab092ccbcbaab4b82525bc4ca800fe8a49" # 4683073184 bytes
    }
    template_file {
      url    = "${local.model_blobs}/sha256:369ca498f347f710d068cbb38bf0b8692dd3fa30f30ca2ff755e211c94768150"
      sha256 = "369ca498f347f710d068cbb38bf0b8692dd3fa30f30ca2ff755e211c94768150" # 387 bytes
    }
    params_file {
      url    = "${local.model_blobs}/sha256:f4d24e9138dd4603380add165d2b0d970bef471fac194b436ebd50e6147c6588"
      sha256 = "f4d24e9138dd4603380add165d2b0d970bef471fac194b436ebd50e6147c6588" # 148 bytes
    }
    license {
      url    = "${local.model_blobs}/sha256:6e4c38e1172f42fdbff13edf9a7a017679fb82b0fde415a3e8b3c31c6ed4a4e4"
      sha256 = "6e4c38e1172f42fdbff13edf9a7a017679fb82b0fde415a3e8b3c31c6ed4a4e4" # 1065 bytes
    }
  }
  verity_root_hash = var.model_root_hash
  # encryption {
  #   key = "<owner>/models/deepseek-r1-7b" # the broker's resource id
  # }
}

payload "webui" {
  dir {
    path = "../webui"
  }
}

service "ollama" {
  payload = "ollama"
  command = "bin/ollama"
  args    = ["serve"]
  env = {
    OLLAMA_HOST   = "127.0.0.1:11434"
    OLLAMA_MODELS = "/payload/model"
  }
  user    = "ollama"
  needs   = ["model"]
  restart = "always"
}

agent {
  listen     = ":8443"
  tls        = true
  upstream   = "http://127.0.0.1:11434"
  webui      = "webui"
  webui_path = "/"
  # Bounds on what a chat request may cost (docs/agent.md, "Option
  # limits"): larger values are refused, an absent num_predict or
  # keep_alive is set to the limit. A reasoning model needs room to think.
  max_num_ctx     = 8192
  max_num_predict = 4096
  max_keep_alive  = "30m"
}
