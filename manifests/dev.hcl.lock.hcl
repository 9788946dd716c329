# This file is maintained by builder build; it records the digests of
# local inputs. Commit it. Run builder build -update-lock after changing an input.

input "payload.webui" {
  sha256 = "7e8fe704da1396adf678d9dfce490219dbe9ae40b650ffd88c20b667db4f8182"
}
