package main

import (
	"errors"
	"io"

	"github.com/spf13/cobra"
)

func serveCmd(_, _ io.Writer) *cobra.Command {
	return &cobra.Command{Use: "serve", RunE: func(*cobra.Command, []string) error { return errors.New("not yet") }}
}

func keygenCmd(_ io.Writer) *cobra.Command {
	return &cobra.Command{Use: "keygen", RunE: func(*cobra.Command, []string) error { return errors.New("not yet") }}
}

func verifyCmd(_, _ io.Writer) *cobra.Command {
	return &cobra.Command{Use: "verify", RunE: func(*cobra.Command, []string) error { return errors.New("not yet") }}
}
