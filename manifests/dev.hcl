# tdforge development image: boots under plain QEMU TCG with the TDX
# simulator, serves a tiny generated model, and exposes a plain HTTP listener
# for local testing. Never deploy a dev image: its attestation is simulated.
#
#   builder validate manifests/dev.hcl
#   builder build --secrets manifests/dev-secrets -o images/dev manifests/dev.hcl
#
# The model payload is encrypted with the fixed, public DEV key in
# manifests/dev-secrets (only a dev image may use it); the guest fetches it
# from the dev key broker, `verifier serve --resources manifests/dev-secrets`
# with the DEV TLS files in deploy/dev-broker.

image {
  name              = "tdforge-dev"
  version           = "0.1.0"
  source_date_epoch = 1735689600 # 2025-01-01T00:00:00Z
  dev               = true
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

# The kernel manifests/confidential-ai.hcl uses: Debian 12's backported 6.12
# cloud kernel. Its EFI stub measures the command line and the initrd (which
# holds the boot policy) into RTMR2 through the EFI CC measurement protocol
# (Linux >= 6.9), so the dev image measures what a real TD would; Debian 12's
# own 6.1 kernel cannot, and builder build refuses it. Its modules are
# xz-compressed (the builder unpacks them); virtio_pci and virtio_console
# (the dev-only debug channel) are built in.
kernel {
  deb {
    package = "linux-image-6.12.117+deb12-cloud-amd64-unsigned"
    version = "6.12.117-1~deb12u1"
    sha256  = "670b2688bcf94c24693f7c7e1fc9776ff2e202ff15553a2614f79415d48a6607"
    path    = "boot/vmlinuz-6.12.117+deb12-cloud-amd64"
  }
  sha256 = "391d229a7c641821b7414d001c090043d977e11daf865362d36ea832ccf0dd69" # extracted vmlinuz
  # button + evdev deliver the ACPI power button (clean shutdown via QMP
  # system_powerdown).
  # dm-crypt and xts open the encrypted model (aes-xts-plain64; AES and
  # ECB are built in). dm-integrity seals the state volume (HMAC-SHA256
  # and ext4 are built in).
  modules = ["virtio_blk", "virtio_net", "dm-verity", "dm-crypt", "xts", "dm-integrity", "erofs", "qemu_fw_cfg", "button", "evdev"]
  cmdline = "console=ttyS0 panic=-1 quiet loglevel=4"
}

vm {
  cpus     = 2
  memory   = "2G"
  platform = "qemu-7.2-tcg-sim"
}

tdx {
  simulate = true
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

# The key broker the guest asks for the model's key, as the guest reaches
# the host under QEMU user networking. ca_sha256 pins the DEV certificate
# deploy/dev-broker/tls.crt (its private key is public: dev only):
#   openssl x509 -in deploy/dev-broker/tls.crt -outform DER | sha256sum
key_broker {
  url       = "https://10.0.2.2:8444"
  ca_sha256 = "2aad06e1a3273f6bf713b5330b3953383d8cb1f0a4be054024c210144be3de48"
}

# A few hundred KB llama-architecture model with deterministic weights; with
# temperature 0 and one thread its output is reproducible.
payload "model" {
  ollama_model {
    name = "tiny"
    tag  = "latest"
    gguf {
      generate = "tiny-llama"
      seed     = 1
    }
    template = "{{ .Prompt }}"
    params = {
      temperature = 0
      num_thread  = 1
      num_ctx     = 512
      seed        = 1
      top_k       = 1
    }
  }
  # The payload lies on the disk encrypted (dm-crypt aes-xts-plain64 under
  # dm-verity); its key is the broker's resource tdforge/dev/model, read
  # from manifests/dev-secrets/tdforge/dev/model by builder build --secrets.
  encryption {
    key = "tdforge/dev/model"
  }
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
    OLLAMA_MODELS = "/payload/model" # payloads mount at /payload/<name>
  }
  user    = "ollama"
  needs   = ["model"]
  restart = "always"
}

agent {
  listen     = ":8443"
  tls        = true
  plain_http = ":8080"
  upstream   = "http://127.0.0.1:11434"
  webui      = "webui"
  webui_path = "/"
  # Bounds on what a chat request may cost (docs/agent.md, "Option
  # limits"): larger values are refused, an absent num_predict or
  # keep_alive is set to the limit.
  max_num_ctx     = 2048
  max_num_predict = 256
  max_keep_alive  = "10m"
}

# Sealed state: the agent keeps conversations here (docs/agent.md,
# "Conversations"). Encrypted and integrity-protected on the host's disk;
# initd obtains the key from the key broker after attestation.
volume "state" {
  size  = "512M"
  key   = "tdforge/dev/state"
  users = ["agent"]
}
