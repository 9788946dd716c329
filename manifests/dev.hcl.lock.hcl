# This file is maintained by builder build; it records the digests of
# local inputs. Commit it. Run builder build -update-lock after changing an input.

input "payload.webui" {
  sha256 = "2db460181985e395747768e5176eca4b5226c86c73cbaecb690baf955aa61e75"
}
