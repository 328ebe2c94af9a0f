"""The gate chain every order intent passes at admission."""
